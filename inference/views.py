"""Pages: the playground, API tokens on the account page, and the run's baselines section.

The playground is async for the same reason as the API: the forward pass runs in a worker
thread, so classifying 500 reviews never holds the thread that serves the site's other pages.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from inference import baselines, ratelimit, services
from inference.forms import ApiTokenForm, BaselinesForm, PlaygroundForm
from inference.models import ApiToken
from inference.serving import LoadsBusy
from labs.access import get_run_for_user
from labs.models import Run
from labs.presenters import missing_model_notes_for

MAX_ACTIVE_TOKENS = 20


# --- playground ---------------------------------------------------------------------------------


def _playground_setup(request):
    """Sync part: the user's targets and the preselected one (?run=12 / ?model=name)."""
    user = request.user
    targets = services.targets_for_user(user)
    default = services.default_target(targets)
    initial = default.model_id if default else ""
    if request.GET.get("run"):
        initial = services.target_for_run(user, request.GET["run"]).model_id  # 404 for a run you may not see
    elif request.GET.get("model"):
        try:
            initial = services.target_for_model_id(user, request.GET["model"]).model_id
        except services.ModelUnavailable:
            pass  # the page names the missing models and how to provide them
    return targets, initial


def _results_context(form, target, result) -> dict:
    labels = list(result.loaded.labels)
    rows = []
    gold = form.gold
    for i, (text, prediction) in enumerate(zip(form.cleaned_data["texts"], result.predictions, strict=True)):
        rows.append({
            "text": text, "label": prediction.label, "truncated": prediction.truncated,
            "confidence": prediction.probs[prediction.label],
            "bars": [{"label": label, "prob": prediction.probs[label], "pct": round(prediction.probs[label] * 100, 1)}
                     for label in labels],
            "gold": gold[i] if gold else None,
        })
    n = len(rows)
    context = {
        "target": target, "labels": labels, "rows": rows, "batch": form.cleaned_data["batch"],
        "latency_ms": result.latency_ms, "per_review_ms": result.latency_ms / max(n, 1),
        "counts": [{"label": label, "n": sum(r["label"] == label for r in rows)} for label in labels],
        "n_truncated": sum(r["truncated"] for r in rows),
        # Which prompt answered: a run is served with the one it was trained with (prompt.json).
        "prompt": result.loaded.classifier.prompt,
    }
    if gold:
        context["accuracy"] = sum(r["label"] == r["gold"] for r in rows) / n
    if context["batch"]:
        context["csv_data_uri"] = "data:text/csv;base64," + base64.b64encode(predictions_csv(rows, labels).encode()).decode()
    return context


def predictions_csv(rows: list[dict], labels: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label", *[f"p_{label}" for label in labels], "truncated"]
                    + (["true_label"] if rows and rows[0]["gold"] is not None else []))
    for row in rows:
        writer.writerow([row["text"], row["label"], *[f"{bar['prob']:.4f}" for bar in row["bars"]], int(row["truncated"])]
                        + ([row["gold"]] if row["gold"] is not None else []))
    return out.getvalue()


@login_required
@require_http_methods(["GET", "POST"])
async def playground(request):
    targets, initial = await sync_to_async(_playground_setup)(request)
    context = {"targets": targets, "max_texts": settings.PLAYGROUND_MAX_TEXTS,
               "missing_models": await sync_to_async(missing_model_notes_for)(request.user),
               "default_target": services.default_target(targets)}
    if request.method == "GET":
        context["form"] = PlaygroundForm(targets=targets, initial={"target": initial})
        return await sync_to_async(render)(request, "inference/playground.html", context)

    form = PlaygroundForm(request.POST, request.FILES, targets=targets)
    context["form"] = form
    status, retry_after = 200, None
    if form.is_valid():
        try:
            target = await sync_to_async(services.target_for_model_id)(request.user, form.cleaned_data["target"])
            # The same per-learner allowance as the API, counted in texts (inference.ratelimit).
            await asyncio.to_thread(ratelimit.charge_texts, request.user, len(form.cleaned_data["texts"]))
            result = await asyncio.to_thread(services.classify, target=target, texts=form.cleaned_data["texts"],
                                             user=request.user)
        except LoadsBusy as exc:
            form.add_error(None, str(exc))
            status, retry_after = 503, exc.retry_after_s
        except ratelimit.RateLimited as exc:
            form.add_error(None, exc.message)
            status = 429
        except ratelimit.LimiterUnavailable:
            form.add_error(None, "The rate limiter is unavailable right now, so nothing is classified: "
                                 "try again in a few seconds.")
            status = 503
        except services.ModelUnavailable as exc:
            form.add_error(None, str(exc))
            status = 503
        else:
            context.update(_results_context(form, target, result))
    else:
        status = 413 if any(e.code == "too_many" for e in form.non_field_errors().as_data()) else 400
    template = "inference/_playground_results.html" if request.htmx else "inference/playground.html"
    response = await sync_to_async(render)(request, template, context, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


# --- API tokens (account page) --------------------------------------------------------------------


def tokens_context(user, new_token: str = "", new_token_obj=None) -> dict:
    return {
        "tokens": list(ApiToken.objects.filter(user=user)),
        "new_token": new_token, "new_token_obj": new_token_obj,
        "token_form": ApiTokenForm(), "api_rate": settings.CLASSIFY_TEXTS_PER_MINUTE, "api_max_texts": settings.API_MAX_TEXTS,
        **example_targets(user),
    }


def example_targets(user) -> dict:
    """What the account page's examples classify with: the playground's default (the learner's
    best servable run, else the default base model), so every example answers 200 as pasted."""
    target = services.default_target(services.targets_for_user(user))
    if target is None:
        return {"example_model": "", "example_body": ""}
    body = {"run": target.run_id} if target.run_id else {"model": target.model_id}
    body["texts"] = ["Arrived broken.", "Does the job."]
    return {"example_model": target.model_id, "example_body": json.dumps(body), "example_is_run": bool(target.run_id),
            "example_target": target}


@login_required
@require_POST
def token_create(request):
    form = ApiTokenForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the token a name of at most 80 characters.")
        return redirect("account")
    if ApiToken.objects.filter(user=request.user).active().count() >= MAX_ACTIVE_TOKENS:
        messages.error(request, f"You have {MAX_ACTIVE_TOKENS} active tokens: revoke one first.")
        return redirect("account")
    token, raw = ApiToken.issue(user=request.user, name=form.cleaned_data["name"] or "API token")
    # Rendered here, not after a redirect: the token exists in plain text only in this one
    # response (never in a session, a cookie or a log).
    context = tokens_context(request.user, raw, token)
    template = "inference/_api_tokens.html" if request.htmx else "accounts/account.html"
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request, pk: int):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)  # someone else's token: 404
    token.revoke()
    if request.htmx:
        return render(request, "inference/_api_tokens.html", tokens_context(request.user))
    messages.success(request, f"Token “{token.name}” revoked: it no longer works.")
    return redirect("account")


# --- baselines (run results page) -----------------------------------------------------------------


def _run_or_404(request, pk):
    run = get_run_for_user(request.user, pk)
    if run.status != Run.Status.SUCCEEDED:
        raise Http404("Baselines need a run that succeeded.")
    return run


@login_required
@require_http_methods(["GET", "POST"])
def run_baselines(request, pk: int):
    """GET: the comparison section (htmx polls it while computing). POST: launch."""
    run = _run_or_404(request, pk)
    if request.method == "POST":
        form = BaselinesForm(request.POST)
        if not form.is_valid():
            messages.error(request, "k must be a whole number from 1 to 64.")
        else:
            try:
                charge = ratelimit.charge_baselines(request.user)
            except ratelimit.RateLimited as exc:
                messages.error(request, exc.message)
            except ratelimit.LimiterUnavailable:
                messages.error(request, "The rate limiter is unavailable right now: launch the baselines again in a minute.")
            else:
                try:
                    baselines.baselines_launch(run=run, k=form.cleaned_data["k"])
                    if not request.htmx:
                        messages.success(request, "Baselines queued: the table fills in as each one finishes.")
                except baselines.BaselinesBusy as exc:
                    ratelimit.release(charge)  # nothing was launched
                    messages.info(request, str(exc))
        if not request.htmx:
            return redirect(reverse("labs:results", args=[run.pk]) + "#baselines")
    return render(request, "inference/_baselines.html", {"run": run, **baselines.comparison(run)})
