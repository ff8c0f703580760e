from django.urls import path

from forms_app import views

app_name = "forms_app"

urlpatterns = [
    path("", views.form_list, name="list"),
    path("new/", views.form_builder, name="create"),
    path("preview/", views.form_preview, name="preview"),
    path("<int:pk>/", views.form_detail, name="detail"),
    path("<int:pk>/edit/", views.form_builder, name="edit"),
    path("<int:pk>/status/", views.form_status, name="status"),
    path("<int:pk>/submissions/", views.submission_list, name="submissions"),
    path("<int:pk>/submissions/export.csv", views.submission_export, name="export"),
    path("submissions/<int:pk>/", views.submission_detail, name="submission"),
]
