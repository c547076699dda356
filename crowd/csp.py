"""Content-Security-Policy on every response (Django 5.2 has no built-in CSP).

The pages are ES modules and stylesheets served from /static/, with no inline script or
style, so the policy allows only this origin; images may also be ``blob:``/``data:`` URLs
(the annotator draws local previews), and the live channel connects over ``ws:``/``wss:``.
The API docs (Swagger UI and Redoc, from the sidecar package's local copies) style their
elements inline and Redoc starts from an inline script and a blob worker: those two paths get
policies relaxed just that far. Redoc's page links no web fonts (crowd/templates/crowd/
redoc.html), and its policy lets the one image its bundle always shows, its maker's logo.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from crowd import storage

HEADER = "Content-Security-Policy"

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self' ws: wss:",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _docs_policy(script_src: str, img_src: str = "") -> str:
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {script_src}",
            "style-src 'self' 'unsafe-inline'",
            f"img-src 'self' blob: data:{img_src}",
            "connect-src 'self'",
            "font-src 'self' data:",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'self'",
            "frame-ancestors 'none'",
        ]
    )


# Swagger UI's start-up script is served as a file (the split view); Redoc's is inline, and
# Redoc's sidebar always shows its maker's logo from their CDN (hidden if it cannot load).
REDOC_LOGO = "https://cdn.redoc.ly"
DOCS_POLICIES = {
    "/api/docs/": _docs_policy("'self'"),
    "/api/redoc/": _docs_policy("'self' 'unsafe-inline'", f" {REDOC_LOGO}"),
}


def _page_policy() -> str:
    """POLICY, plus the file bucket's origin for images and fetches when the files live in a
    bucket: image URLs answer with a redirect to a presigned URL there."""
    bucket = storage.origin()
    if not bucket:
        return POLICY
    return POLICY.replace("img-src 'self'", f"img-src 'self' {bucket}").replace(
        "connect-src 'self'", f"connect-src 'self' {bucket}"
    )


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if HEADER not in response:
            response[HEADER] = DOCS_POLICIES.get(request.path) or _page_policy()
        return response
