"""Public form pages, mounted at /f/: no login, frameable, no CSRF cookie (see forms_app.spam)."""

from django.urls import path

from forms_app import views

app_name = "forms_public"

urlpatterns = [
    path("<slug:slug>/", views.public_form, name="form"),
    path("<slug:slug>/thanks/", views.public_thanks, name="thanks"),
]
