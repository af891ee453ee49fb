from django.urls import path

from quiz import views

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
]
