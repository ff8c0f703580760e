from django.urls import path

from contacts.importing import views

app_name = "importing"

urlpatterns = [
    path("<int:job_id>/", views.progress, name="progress"),
    path("<int:job_id>/progress.json", views.progress_json, name="progress_json"),
]
