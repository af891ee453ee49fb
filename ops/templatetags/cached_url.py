"""The {% url %} tag, through ops.reversing.cached_reverse: a template builtin (settings.TEMPLATES),
so every template's {% url %} is this one, written and read exactly as Django's."""

from django import template
from django.template.defaulttags import URLNode
from django.template.defaulttags import url as django_url
from django.urls import NoReverseMatch
from django.utils.html import conditional_escape

from ops.reversing import cached_reverse

register = template.Library()


class CachedURLNode(URLNode):
    def render(self, context):
        # Django's URLNode.render (5.2), with cached_reverse in place of reverse.
        args = [arg.resolve(context) for arg in self.args]
        kwargs = {k: v.resolve(context) for k, v in self.kwargs.items()}
        view_name = self.view_name.resolve(context)
        try:
            current_app = context.request.current_app
        except AttributeError:
            try:
                current_app = context.request.resolver_match.namespace
            except AttributeError:
                current_app = None
        url = ""
        try:
            url = cached_reverse(view_name, args=args, kwargs=kwargs, current_app=current_app)
        except NoReverseMatch:
            if self.asvar is None:
                raise
        if self.asvar:
            context[self.asvar] = url
            return ""
        return conditional_escape(url) if context.autoescape else url


@register.tag
def url(parser, token):
    node = django_url(parser, token)  # Django's parsing and its errors, unchanged
    return CachedURLNode(node.view_name, node.args, node.kwargs, node.asvar)
