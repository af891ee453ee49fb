"""Roles an operator gives in the admin (Users -> Groups), made sure of after every migrate.

Curators: edit, review and publish the question bank and the curated quizzes in the admin, and
nothing else. They are staff (the admin needs it) but see no learner data: no runs, uploads,
attempts, practice cards, interviews or API tokens. Being staff grants no power over learners'
runs; that is the permission labs.view_all_runs (labs.access), given to operators only.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

CURATORS = "Curators"
# (app, model) -> actions. The questions and quizzes; the revision log is read-only history.
CURATOR_PERMISSIONS = {
    ("quiz", "question"): ("add", "change", "delete", "view"),
    ("quiz", "choice"): ("add", "change", "delete", "view"),
    ("quiz", "quiz"): ("add", "change", "delete", "view"),
    ("quiz", "quizitem"): ("add", "change", "delete", "view"),
    ("quiz", "questionrevision"): ("view",),
}


def ensure_roles(sender=None, **kwargs) -> None:
    """Create the Curators group with exactly its permissions. Connected to post_migrate, which
    is sent once per app after auth created that app's permissions: only quiz's matters. A
    permission an operator added to the group by hand is taken away again: the role is defined
    here, once."""
    if sender is not None and sender.label != "quiz":
        return

    wanted = [Permission.objects.get(content_type__app_label=app, codename=f"{action}_{model}")
              for (app, model), actions in CURATOR_PERMISSIONS.items() for action in actions]
    group, _ = Group.objects.get_or_create(name=CURATORS)
    group.permissions.set(wanted)


def make_curator(user) -> None:
    """Staff (to use the admin) in the Curators group, and nothing more."""
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.groups.add(Group.objects.get(name=CURATORS))
