from django.urls import path

from contacts import views

app_name = "contacts"

urlpatterns = [
    path("", views.home, name="home"),
    path("contacts/", views.contact_list, name="list"),
    path("contacts/export/", views.contact_export, name="export"),
    path("contacts/bulk/", views.contact_bulk, name="bulk"),
    path("contacts/new/", views.contact_create, name="create"),
    path("contacts/views/", views.saved_view_create, name="view_create"),
    path("contacts/views/<int:pk>/delete/", views.saved_view_delete, name="view_delete"),
    path("contacts/<int:pk>/", views.contact_detail, name="detail"),
    path("contacts/<int:pk>/edit/", views.contact_edit, name="edit"),
    path("contacts/<int:pk>/timeline/", views.contact_timeline_more, name="timeline"),
    path("contacts/<int:pk>/notes/", views.contact_add_note, name="add_note"),
    path("contacts/<int:pk>/files/", views.contact_add_file, name="add_file"),
    path("contacts/<int:pk>/files/<int:file_id>/", views.contact_file_download, name="file"),
    path("contacts/<int:pk>/tasks/", views.contact_add_task, name="add_task"),
    path("contacts/<int:pk>/tags/", views.contact_tags, name="tags"),
    path("contacts/<int:pk>/stage/", views.contact_stage, name="stage"),
    path("contacts/<int:pk>/merge/", views.contact_merge, name="merge"),
    path("contacts/<int:pk>/duplicates/<int:flag_id>/dismiss/", views.duplicate_dismiss, name="duplicate_dismiss"),
    path("tasks/", views.my_tasks, name="tasks"),
    path("tasks/<int:pk>/toggle/", views.task_toggle, name="task_toggle"),
    path("pipeline/", views.board, name="board"),
    path("pipeline/move/", views.board_move, name="board_move"),
    path("pipeline/stages/<int:stage_id>/cards/", views.board_column, name="board_column"),
    path("pipeline/cards/<int:contact_id>/", views.board_card, name="board_card"),
]
