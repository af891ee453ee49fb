import csv
import io

from django import forms
from django.conf import settings

from inference.services import text_problem

MAX_CSV_BYTES = 2_000_000


class PlaygroundForm(forms.Form):
    # Any model id is accepted (a CharField shown as a select): the view resolves it with the
    # access helper, so a run that is not in the list (someone else's) answers 404, not a form error.
    target = forms.CharField(label="Model", widget=forms.Select)
    text = forms.CharField(label="Review", required=False,
                           widget=forms.Textarea(attrs={"rows": 4, "placeholder": "Type a product review…"}))
    per_line = forms.BooleanField(label="Each line is a separate review", required=False)
    one_review = forms.BooleanField(label="All lines are one review", required=False)
    csv_file = forms.FileField(label="…or upload a CSV", required=False,
                               help_text="A column named text (or the first column); a label column, if present, is compared.")

    def __init__(self, *args, targets=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].widget.choices = [(t.model_id, t.title) for t in targets]
        self.gold: list[str] | None = None  # labels from the CSV's label column, if any

    def clean(self):
        data = super().clean()
        upload = data.get("csv_file")
        if upload:
            data["texts"] = self._csv_texts(upload)
            data["batch"] = True
        else:
            text = (data.get("text") or "").strip()
            if not text:
                raise forms.ValidationError("The text is empty: type a review (or paste several, one per line), or upload a CSV.")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if data.get("per_line") and data.get("one_review"):
                raise forms.ValidationError("Tick either “Each line is a separate review” or “All lines are one review”, "
                                            "not both.", code="ambiguous_lines")
            if len(lines) > 1 and not data.get("per_line") and not data.get("one_review"):
                # One label for a pasted list is almost never what was meant: ask rather than guess.
                raise forms.ValidationError(f"Your text has {len(lines)} lines. Tick “Each line is a separate review” "
                                            "for one label per line, or “All lines are one review” for one label.",
                                            code="ambiguous_lines")
            if data.get("per_line"):
                data["texts"], data["batch"] = lines, True
            else:
                data["texts"], data["batch"] = [text], False
        limit = settings.PLAYGROUND_MAX_TEXTS
        if len(data["texts"]) > limit:
            raise forms.ValidationError(f"Too many reviews: {len(data['texts'])}; the playground takes at most {limit} at once "
                                        f"(the API takes {settings.API_MAX_TEXTS} per request).", code="too_many")
        return data

    def _csv_texts(self, upload) -> list[str]:
        if upload.size > MAX_CSV_BYTES:
            raise forms.ValidationError(f"The file is {upload.size:,} bytes; the limit is {MAX_CSV_BYTES:,}.")
        try:
            content = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError("The file is not UTF-8 text (save it as UTF-8 CSV).") from None
        try:
            rows = [row for row in csv.reader(io.StringIO(content, newline="")) if any(cell.strip() for cell in row)]
        except csv.Error as exc:
            raise forms.ValidationError(f"The file is not valid CSV ({exc}).") from None
        if not rows:
            raise forms.ValidationError("The file has no rows.")
        header = [cell.strip().lower() for cell in rows[0]]
        text_col, label_col, has_header = 0, None, "text" in header
        if has_header:
            text_col = header.index("text")
            label_col = header.index("label") if "label" in header else None
            rows = rows[1:]
        texts = [row[text_col].strip() if len(row) > text_col else "" for row in rows]
        if label_col is not None:
            self.gold = [row[label_col].strip().lower() if len(row) > label_col else "" for row in rows]
        if not texts:
            raise forms.ValidationError("The file has a header but no reviews.")
        empty = [i for i, text in enumerate(texts) if not text]
        if empty:
            raise forms.ValidationError(f"Row {empty[0] + 1 + has_header} of the file has an empty text.")

        for i, text in enumerate(texts):
            problem = text_problem(text)
            if problem:  # a NUL: UTF-8 decoding already refused surrogates
                raise forms.ValidationError(f"Row {i + 1 + has_header} of the file {problem}.")
        return texts


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=80, required=False, initial="API token",
                           widget=forms.TextInput(attrs={"placeholder": "e.g. laptop script"}))


class BaselinesForm(forms.Form):
    k = forms.IntegerField(label="Examples in the few-shot prompts (k)", min_value=1, max_value=64)
