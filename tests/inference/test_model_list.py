"""Which models a learner is offered: their own servable runs, then the base models. Staff may
serve anyone's run by id, but their list (playground, /v1/models) shows their own, as a
learner's does."""

from inference.services import run_model_id, target_for_run, targets_for_user


def test_everyones_list_shows_their_own_runs_and_staff_may_still_serve_any(make_run, owner, staff_user):
    theirs = make_run(owner)
    own = make_run(staff_user)
    assert [t.run_id for t in targets_for_user(owner) if t.run_id] == [theirs.pk]
    assert [t.model_id for t in targets_for_user(staff_user) if t.run_id] == [run_model_id(own.pk)]
    assert target_for_run(staff_user, theirs.pk).run_id == theirs.pk
