from django.contrib import admin

from ops.models import PingJob


@admin.register(PingJob)
class PingJobAdmin(admin.ModelAdmin):
    list_display = ("id", "created_by", "created_at", "status", "worker_host")
    readonly_fields = ("events",)
