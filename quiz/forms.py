from django import forms

from labs.catalog import lab_slugs
from quiz.models import Interview
from quiz.services import MAX_QUIZ_LENGTH
from quiz.services.interviews import LENGTHS as INTERVIEW_LENGTHS
from quiz.services.interviews import SECONDS_PER_QUESTION
from quiz.vocab import TOPICS, Difficulty, Kind, topic_label

TOPIC_CHOICES = [(t, topic_label(t)) for t in TOPICS]
PRACTICE_CHOICES = [("new", "New to me"), ("due", "Due for review"), ("mastered", "Mastered")]
REVEAL_STEPS = ("hint", "answer")
RATING_CHOICES = [(1, "Again"), (2, "Hard"), (3, "Good"), (4, "Easy")]


class QuestionFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, label="Search",
                        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Search title, question, answer"}))
    topic = forms.ChoiceField(required=False, label="Topic", choices=[("", "Any topic")] + TOPIC_CHOICES)
    difficulty = forms.ChoiceField(required=False, label="Difficulty", choices=[("", "Any difficulty")] + Difficulty.choices)
    kind = forms.ChoiceField(required=False, label="Kind", choices=[("", "Any kind")] + Kind.choices)
    lab = forms.ChoiceField(required=False, label="Lab",
                            choices=lambda: [("", "Any lab")] + [(s, f"Lab: {s}") for s in lab_slugs()])
    very_often = forms.BooleanField(required=False, label="Asked very often")
    practice = forms.ChoiceField(required=False, choices=[("", "Any practice status")] + PRACTICE_CHOICES,
                                 label="My practice")


class BuildQuizForm(forms.Form):
    topics = forms.MultipleChoiceField(required=False, choices=TOPIC_CHOICES, widget=forms.CheckboxSelectMultiple,
                                       help_text="None ticked = all topics.")
    difficulties = forms.MultipleChoiceField(required=False, choices=Difficulty.choices, widget=forms.CheckboxSelectMultiple,
                                             help_text="None ticked = all levels.")
    kinds = forms.MultipleChoiceField(required=False, choices=Kind.choices, widget=forms.CheckboxSelectMultiple,
                                      label="Question kinds", help_text="None ticked = all kinds.")
    length = forms.IntegerField(min_value=1, max_value=MAX_QUIZ_LENGTH, initial=5, label="Number of questions")
    time_limit_minutes = forms.IntegerField(required=False, min_value=1, max_value=240, label="Time limit (minutes)",
                                            help_text="Optional.")


class RatingForm(forms.Form):
    rating = forms.TypedChoiceField(choices=RATING_CHOICES, coerce=int)


class InterviewStartForm(forms.Form):
    level = forms.ChoiceField(choices=Interview.Level.choices, initial=Interview.Level.FULL, widget=forms.RadioSelect,
                              help_text="Full loop: a few questions of each level, from beginner to scenario.")
    length = forms.TypedChoiceField(choices=[(n, f"{n} questions") for n in INTERVIEW_LENGTHS], coerce=int, initial=8,
                                    widget=forms.RadioSelect, label="Length")
    seconds_per_question = forms.TypedChoiceField(
        choices=[(s, f"{s // 60} minutes") for s in SECONDS_PER_QUESTION], coerce=int, initial=180,
        widget=forms.RadioSelect, label="Time per question", help_text="A follow-up gets half of it.")
