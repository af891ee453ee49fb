from django.contrib import admin

from labs.models import DatasetUpload, Lab, Run, RunEvent, RunGroup


@admin.register(Lab)
class LabAdmin(admin.ModelAdmin):
    list_display = ("slug", "title", "order", "is_active")
    readonly_fields = ("body_html",)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "lab", "label", "mode", "status", "created_at", "worker_host")
    list_filter = ("status", "mode", "lab")
    search_fields = ("owner__username", "celery_task_id", "worker_host")
    raw_id_fields = ("owner", "group", "upload", "continue_from", "cloned_from")
    readonly_fields = ("last_seq", "created_at")


@admin.register(RunGroup)
class RunGroupAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "lab", "title", "created_at")


@admin.register(RunEvent)
class RunEventAdmin(admin.ModelAdmin):
    list_display = ("run", "seq", "type", "created_at")
    list_filter = ("type",)
    raw_id_fields = ("run",)


@admin.register(DatasetUpload)
class DatasetUploadAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "filename", "created_at")
    exclude = ("examples",)
