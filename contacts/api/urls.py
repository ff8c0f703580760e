"""Contact endpoints of the agent API (mounted under /api/v1/)."""

from django.urls import path

from contacts.api import views

urlpatterns = [
    path("contacts", views.ContactListView.as_view(), name="api-contacts"),
    path("contacts/upsert", views.ContactUpsertView.as_view(), name="api-contacts-upsert"),
    path("contacts/batch-upsert", views.ContactBatchUpsertView.as_view(), name="api-contacts-batch-upsert"),
    path("contacts/<int:pk>", views.ContactDetailView.as_view(), name="api-contact"),
    path("contacts/<int:pk>/notes", views.ContactNotesView.as_view(), name="api-contact-notes"),
    path("contacts/<int:pk>/tasks", views.ContactTasksView.as_view(), name="api-contact-tasks"),
    path("contacts/<int:pk>/files", views.ContactFilesView.as_view(), name="api-contact-files"),
    path("contacts/<int:pk>/tags", views.ContactTagsView.as_view(), name="api-contact-tags"),
    # path: a tag name may hold "/" ("B2B/Partner"), which the client sends as %2F.
    path("contacts/<int:pk>/tags/<path:tag>", views.ContactTagDeleteView.as_view(), name="api-contact-tag"),
    path("contacts/<int:pk>/stage", views.ContactStageView.as_view(), name="api-contact-stage"),
    path("intake", views.IntakeView.as_view(), name="api-intake"),
    path("access/check", views.AccessCheckView.as_view(), name="api-access-check"),
]
