"""Curators edit, review and publish questions in the Django admin; learners cannot get in."""

from quiz.models import Question, QuestionRevision


def form_data(question, **changes) -> dict:
    data = {
        "slug": question.slug, "title": question.title, "status": question.status, "kind": question.kind,
        "difficulty": question.difficulty, "topics": question.topics, "lab": question.lab, "prompt": question.prompt,
        "hint": question.hint, "answer": question.answer, "rubric": "\n".join(question.rubric),
        "numeric_answer": "" if question.numeric_answer is None else question.numeric_answer,
        "tolerance": "" if question.tolerance is None else question.tolerance, "unit": question.unit,
        "choices-TOTAL_FORMS": 0, "choices-INITIAL_FORMS": 0, "revisions-TOTAL_FORMS": 0, "revisions-INITIAL_FORMS": 0,
    }
    choices = list(question.choices.all())
    data.update({"choices-TOTAL_FORMS": len(choices), "choices-INITIAL_FORMS": len(choices)})
    for i, choice in enumerate(choices):
        data.update({f"choices-{i}-id": choice.id, f"choices-{i}-question": question.id, f"choices-{i}-position": i,
                     f"choices-{i}-text": choice.text, f"choices-{i}-explanation": choice.explanation})
        if choice.correct:
            data[f"choices-{i}-correct"] = "on"
    data.update(changes)
    return data


def test_a_learner_is_redirected_away_from_the_question_admin(owner_client, make_question):
    response = owner_client.get("/admin/quiz/question/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_search_and_filter_questions(client, staff_user, make_question):
    client.force_login(staff_user)
    make_question("open", title="Alpha over r", topics=["lora"])
    make_question("numeric", title="Memory of 70B", topics=["qlora"], status="draft")
    page = client.get("/admin/quiz/question/?q=alpha").content.decode()
    assert "Alpha over r" in page and "Memory of 70B" not in page
    page = client.get("/admin/quiz/question/?topic=qlora&status__exact=draft&kind__exact=numeric").content.decode()
    assert "Memory of 70B" in page and "Alpha over r" not in page


def test_bulk_publish_moves_questions_in_review_and_skips_drafts(client, staff_user, make_question):
    client.force_login(staff_user)
    in_review, draft = make_question("open", status="review"), make_question("open", status="draft")
    response = client.post("/admin/quiz/question/", {"action": "publish", "_selected_action": [in_review.pk, draft.pk]},
                           follow=True)
    page = response.content.decode()
    assert "1 question(s) now published" in page and "1 draft(s) skipped" in page
    assert Question.objects.get(pk=in_review.pk).status == "published"
    assert Question.objects.get(pk=draft.pk).status == "draft"
    revision = QuestionRevision.objects.get(question=in_review)
    assert (revision.user, revision.source, revision.changes) == (staff_user, "action", {"status": ["review", "published"]})
    client.post("/admin/quiz/question/", {"action": "unpublish", "_selected_action": [in_review.pk]})
    assert Question.objects.get(pk=in_review.pk).status == "draft"


def test_an_admin_save_records_who_changed_which_fields(client, staff_user, make_question):
    client.force_login(staff_user)
    question = make_question("single")
    response = client.post(f"/admin/quiz/question/{question.pk}/change/",
                           form_data(question, title="A clearer title", **{"choices-1-text": "a better distractor"}))
    assert response.status_code == 302, response.content.decode()[-3000:]
    revision = QuestionRevision.objects.get(question=question)
    assert revision.user == staff_user and revision.source == "admin"
    assert set(revision.changes) == {"title", "choices"}
    assert revision.changes["title"] == [question.title, "A clearer title"]
    history = client.get(f"/admin/quiz/question/{question.pk}/change/").content.decode()
    assert "History (who changed what)" in history and "<p>title, choices</p>" in history


def test_a_draft_cannot_skip_review(client, staff_user, make_question):
    client.force_login(staff_user)
    question = make_question("open", status="draft")
    response = client.post(f"/admin/quiz/question/{question.pk}/change/", form_data(question, status="published"))
    assert response.status_code == 200 and "goes to review before it is published" in response.content.decode()
    assert Question.objects.get(pk=question.pk).status == "draft"


def test_a_single_choice_question_with_two_correct_choices_is_refused(client, staff_user, make_question):
    client.force_login(staff_user)
    question = make_question("single")
    response = client.post(f"/admin/quiz/question/{question.pk}/change/", form_data(question, **{"choices-1-correct": "on"}))
    assert response.status_code == 200
    assert "exactly 1 correct choice, found 2" in response.content.decode()


def test_the_markdown_preview_is_sanitized(client, staff_user, make_question):
    client.force_login(staff_user)
    question = make_question("open", prompt="**bold** <script>alert('x')</script> <img src=x onerror=alert(1)>")
    page = client.get(f"/admin/quiz/question/{question.pk}/change/").content.decode()
    preview = page[page.index('class="quiz-preview"'):]
    preview = preview[:preview.index("</div>")]
    assert "<strong>bold</strong>" in preview
    assert "<script" not in preview and "onerror" not in preview
