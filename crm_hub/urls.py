from django.contrib import admin
from django.urls import include, path

from contacts import views as contacts_views
from contacts.forms import StaffAdminAuthenticationForm

admin.site.site_header = "CRM Hub administration"
admin.site.site_title = "CRM Hub admin"
# Admin sign-in shares the web UI's failed-login throttle (crm_hub/login_throttle.py).
admin.site.login_form = StaffAdminAuthenticationForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("imports/", include("contacts.importing.urls")),  # issue 7: import progress page
    path("api/v1/", include("crm_hub.api.urls")),
    # Web UI (issue 5): login/logout, contacts, pipeline board, tasks.
    path("accounts/login/", contacts_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", contacts_views.LogoutView.as_view(), name="logout"),
    path("", include("contacts.urls")),
    # Forms (issue 8): builder and review for staff, public pages for visitors.
    path("forms/", include("forms_app.urls")),
    path("f/", include("forms_app.public_urls")),
]

handler400 = "contacts.views.error_400"
handler403 = "contacts.views.error_403"
handler404 = "contacts.views.error_404"
handler500 = "contacts.views.error_500"

# No public MEDIA_URL, not even with DEBUG: media holds contact files, uploaded
# imports and their error files, all personal data. Each is served by a view
# that checks who asks (contacts:file, the import admin's file and errors.csv).
# Static files stay public (staticfiles' runserver in development).
