from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from labs import exports, presenters
from labs.access import get_group_for_user, get_run_for_user, is_unlimited, visible_to
from labs.forms import RunForm, initial_from_config
from labs.models import Lab, Run
from labs.scheduling import prepare_estimate, queue_available
from labs.services import LaunchRefused, clone_initial, group_launch, run_cancel, run_launch, upload_create
from mlcore.gguf_export import ExportError

MAX_COMPARE = 12


def lab_list(request):
    return render(request, "labs/lab_list.html", {"labs": Lab.objects.filter(is_active=True)})


def lab_detail(request, slug: str):
    lab = get_object_or_404(Lab, slug=slug, is_active=True)
    recent = Run.objects.filter(lab=lab, owner=request.user)[:10] if request.user.is_authenticated else []
    return render(request, "labs/lab_detail.html", {
        "lab": lab, "recent_runs": recent,
        "preset_rows": presenters.config_rows(lab.preset), "durations": presenters.lab_durations(lab),
    })


@login_required
def launch(request, slug: str):
    lab = get_object_or_404(Lab, slug=slug, is_active=True)
    source = None
    if request.GET.get("clone"):
        source = get_run_for_user(request.user, request.GET["clone"])
    # A clone is one run even when it comes from a multi-run lab; otherwise the lab decides.
    multi_run = lab.is_multi_run and source is None
    initial = initial_from_config(clone_initial(source) if source else lab.preset)
    if source and source.continue_from_id:
        initial["continue_from"] = source.continue_from_id
    form = RunForm(request.POST or None, request.FILES or None, user=request.user, lab=lab, multi_run=multi_run, initial=initial)
    if request.method == "POST" and form.is_valid():
        if not queue_available():
            # Refuse before writing anything: no run is left queued that nothing will send.
            return render(request, "labs/queue_unavailable.html", {"lab": lab}, status=503)
        if not is_unlimited(request.user):
            # Load the tokenizer the cost estimate needs (seconds, once per process) before
            # _launch's transaction, which on SQLite holds the database's write lock.
            prepare_estimate(form.config["base_model"])
        try:
            return _launch(request, lab, form, multi_run, source)
        except LaunchRefused as exc:
            form.add_error(None, str(exc))
            for name, message in exc.errors.items():
                form.add_error(name if name in form.fields else None, message)
    return render(request, "labs/launch.html", {
        "lab": lab, "form": form, "multi_run": multi_run, "source": source,
        "variants": presenters.variant_rows(lab) if multi_run else [],
    }, status=400 if form.errors else 200)


def _launch(request, lab, form, multi_run, source):
    with transaction.atomic():
        upload = form.dataset_upload
        if form.cleaned_data.get("upload"):
            upload = upload_create(user=request.user, filename=form.cleaned_data["upload"].name, examples=form.upload_examples)
        config = dict(form.config, dataset=upload.dataset_key if upload else form.config["dataset"])
        if multi_run:
            group = group_launch(user=request.user, lab=lab, config=config, upload=upload)
            return redirect(group)
        run = run_launch(
            user=request.user, lab=lab, config=config, upload=upload,
            continue_from=form.cleaned_data.get("continue_from"), cloned_from=source,
        )
    return redirect(run)


@login_required
def run_list(request):
    runs = visible_to(request.user, Run.objects.all()).select_related("lab", "owner", "group")[:200]
    return render(request, "labs/run_list.html", {"runs": runs})


@login_required
def run_detail(request, pk: int):
    run = get_run_for_user(request.user, pk)
    context = presenters.run_context(run)
    if run.status == Run.Status.SUCCEEDED:
        context.update(presenters.results_context(request, run))
    return render(request, "labs/run_detail.html", context)


@login_required
def run_results(request, pk: int):
    """The results on their own page, or (htmx, when the live page sees the run end) as a fragment."""
    run = get_run_for_user(request.user, pk)
    partial = bool(request.htmx) and not request.htmx.boosted
    context = {**presenters.run_context(run), **presenters.results_context(request, run), "standalone": not partial}
    return render(request, "labs/_results.html" if partial else "labs/run_results.html", context)


@login_required
@require_POST
def run_cancel_view(request, pk: int):
    run = get_run_for_user(request.user, pk)
    outcome = run_cancel(run=run, user=request.user)
    if request.htmx:
        run.refresh_from_db()
        return render(request, "labs/_run_status.html", presenters.run_context(run))
    text = {"cancelled": "Run cancelled.", "stopping": "Stopping after the current step…",
            "finished": "The run had already finished."}[outcome]
    messages.info(request, text)
    return redirect(run)


@login_required
def run_clone(request, pk: int):
    run = get_run_for_user(request.user, pk)
    if run.lab is None:
        raise Http404("This run's lab no longer exists.")
    return redirect(f"{reverse('labs:launch', args=[run.lab.slug])}?clone={run.pk}")


@login_required
def run_download(request, pk: int):
    """The adapter with its config, labels and metrics as one zip (owner or staff only)."""
    run = get_run_for_user(request.user, pk)
    if not run.has_adapter:
        raise Http404("This run has no adapter to download.")
    archive = presenters.adapter_zip(run)
    if archive is None:
        raise Http404("The adapter files are missing from the artifacts storage.")
    return FileResponse(archive, as_attachment=True, filename=f"tunelab-run-{run.pk}-adapter.zip",
                        content_type="application/zip")


@login_required
def group_detail(request, pk: int):
    group = get_group_for_user(request.user, pk)
    runs = list(group.runs.select_related("lab").defer("predictions", "token_view").order_by("pk"))
    context = {"group": group, **presenters.compare_context(runs, sweep=group.sweep)}
    template = "labs/_group_runs.html" if request.htmx else "labs/group_detail.html"
    return render(request, template, context)


@login_required
def compare(request):
    # ?ids=1,2,3 (links) or ?id=1&id=2 (the runs list's checkboxes, without JavaScript)
    raw = ",".join([request.GET.get("ids", ""), *request.GET.getlist("id")])
    try:
        ids = list(dict.fromkeys(int(part) for part in raw.split(",") if part.strip()))
    except ValueError:
        return _compare_picker(request, [], "Runs are numbers separated by commas, e.g. ?ids=3,4: tick them below instead.",
                               status=400)
    if not 2 <= len(ids) <= MAX_COMPARE:
        # Not a dead end: the learner's runs to tick, with what they asked for already ticked.
        note = "" if not ids else (f"Pick at least one more run to compare with run {ids[0]}." if len(ids) == 1
                                   else f"Pick at most {MAX_COMPARE} runs.")
        return _compare_picker(request, ids, note)
    # Every id goes through the one access rule: a run you may not see is a 404, not a gap. The
    # predictions and token view (up to ~1 MB a run) are not compared: left in the database.
    found = visible_to(request.user, Run.objects.select_related("lab", "group").defer("predictions", "token_view"))
    found = {run.pk: run for run in found.filter(pk__in=ids)}
    if len(found) != len(ids):
        raise Http404("No such run.")
    runs = [found[pk] for pk in ids]
    groups = {run.group_id for run in runs}
    sweep = runs[0].group.sweep if len(groups) == 1 and runs[0].group else ""
    return render(request, "labs/compare.html", presenters.compare_context(runs, sweep=sweep))


def _compare_picker(request, ticked: list[int], note: str, status: int = 200):
    runs = visible_to(request.user, Run.objects.all()).filter(owner=request.user).select_related("lab").order_by("-pk")[:100]
    return render(request, "labs/compare.html", {
        "picker": runs, "ticked": set(ticked), "note": note, "max_compare": MAX_COMPARE,
    }, status=status)


# --- Download for llama.cpp / Ollama (labs.exports) -------------------------------------------


def _run_with_adapter(request, pk: int) -> Run:
    run = get_run_for_user(request.user, pk)
    if not run.has_adapter:  # queued, running, failed, few-shot: nothing to export
        raise Http404("This run has no trained adapter to export.")
    return run


@login_required
def run_gguf(request, pk: int):
    """GET: the download panel (htmx polls it while a build runs). POST quant=...: start a build."""
    run = _run_with_adapter(request, pk)
    error, status, quant = "", 200, request.POST.get("quant", "")
    if request.method == "POST":
        try:
            exports.gguf_export_request(run=run, quant=quant, user=request.user)
        except ExportError as exc:
            error, status = f"quant: {exc}", 400
        except exports.ExportRefused as exc:
            error, status = str(exc), exc.status
        if not request.htmx and not error:
            return redirect(f"{reverse('labs:results', args=[run.pk])}#gguf-export")
    context = {"run": run, "gguf": exports.gguf_panel(run, error=error, selected=quant),
               "agreement": presenters.gguf_agreement_rows()}
    return render(request, "labs/_gguf_export.html", context, status=status)


@login_required
def run_gguf_download(request, pk: int, quant: str):
    run = _run_with_adapter(request, pk)
    path = exports.bundle_path(run, quant)
    if exports.gguf_export_state(run=run, quant=quant).state != "ready":
        raise Http404("This export has not been built; build it on the results page.")
    return FileResponse(path.open("rb"), as_attachment=True, filename=path.name, content_type="application/zip")
