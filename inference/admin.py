from django.contrib import admin

from inference.models import ApiToken, BaselineResult


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "display_prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "user__username", "display_prefix")
    # The hash is useless to a person and the token itself is never stored.
    exclude = ("token_hash",)
    readonly_fields = ("user", "display_prefix", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False  # tokens are issued on the account page, where the secret is shown once


@admin.register(BaselineResult)
class BaselineResultAdmin(admin.ModelAdmin):
    list_display = ("run", "method", "status", "k", "model_name", "macro_f1", "latency_p50_ms", "cost_per_1000", "updated_at")
    list_filter = ("method", "status", "is_external")
    readonly_fields = ("details",)
