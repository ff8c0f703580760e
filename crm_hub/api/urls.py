"""The agent API under /api/v1/."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

import crm_hub.api.schema  # noqa: F401  (registers the bearer-token scheme with drf-spectacular)
from crm_hub.api.root import api_root, endpoint_not_found

urlpatterns = [
    path("", api_root, name="api-root"),
    path("", include("conversations.api")),
    path("schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="api-schema"),
    # Swagger UI served from drf-spectacular-sidecar's static files: no CDN needed.
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", authentication_classes=[], permission_classes=[]),
        name="api-docs",
    ),
    path("", include("contacts.api.urls")),
    # Last: any other path under /api/v1/ (DEBUG or not) is the API's JSON 404.
    re_path(r"^(?P<unmatched>.*)$", endpoint_not_found),
]
