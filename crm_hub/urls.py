from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.static import serve

admin.site.site_header = "CRM Hub administration"
admin.site.site_title = "CRM Hub admin"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("imports/", include("contacts.importing.urls")),  # issue 7: import progress page
]

if settings.DEBUG:
    urlpatterns += [path(f"{settings.MEDIA_URL.strip('/')}/<path:path>", serve, {"document_root": settings.MEDIA_ROOT})]
