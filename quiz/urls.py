from django.urls import path

from quiz import interview_views, views

app_name = "quiz"

urlpatterns = [
    path("", views.question_list, name="questions"),
    path("q/<slug:slug>/", views.question_detail, name="question"),
    path("q/<slug:slug>/practise/", views.question_practise, name="question-practise"),
    path("quizzes/", views.quiz_home, name="quizzes"),
    path("quizzes/build/", views.quiz_build, name="build"),
    path("quizzes/<slug:slug>/start/", views.quiz_start, name="start"),
    path("attempts/<int:pk>/", views.attempt_overview, name="attempt"),
    path("attempts/<int:pk>/<int:n>/", views.attempt_question, name="question-in-attempt"),
    path("attempts/<int:pk>/<int:n>/autosave/", views.attempt_autosave, name="autosave"),
    path("attempts/<int:pk>/submit/", views.attempt_submit, name="submit"),
    path("attempts/<int:pk>/results/", views.attempt_results, name="results"),
    path("answers/<int:pk>/self-assess/", views.answer_self_assessment, name="self-assess"),
    path("reviews/<int:pk>/rate/", views.review_rate, name="rate"),
    path("practice/", views.practice, name="practice"),
    path("practice/<int:pk>/rate/", views.practice_rate, name="practice-rate"),
    path("progress/", views.progress, name="progress"),
    path("interviews/", interview_views.interview_home, name="interviews"),
    path("interviews/start/", interview_views.interview_begin, name="interview-start"),
    path("interviews/<int:pk>/", interview_views.interview_page, name="interview"),
    path("interviews/<int:pk>/answer/", interview_views.interview_answer, name="interview-answer"),
    path("interviews/<int:pk>/autosave/", interview_views.interview_autosave, name="interview-autosave"),
    path("interviews/<int:pk>/pause/", interview_views.interview_pause_view, name="interview-pause"),
    path("interviews/<int:pk>/resume/", interview_views.interview_resume_view, name="interview-resume"),
    path("interviews/<int:pk>/end/", interview_views.interview_stop, name="interview-end"),
    path("interviews/<int:pk>/report/", interview_views.interview_report_view, name="interview-report"),
    path("interviews/<int:pk>/regrade/", interview_views.interview_regrade, name="interview-regrade"),
    path("interview-answers/<int:pk>/self-grade/", interview_views.interview_self_grade, name="interview-self-grade"),
]
