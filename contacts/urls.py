from django.urls import path

from contacts import views

app_name = "contacts"

urlpatterns = [
    path("", views.home, name="home"),
    path("contacts/", views.contact_list, name="list"),
    path("pipeline/", views.board, name="board"),
    path("tasks/", views.my_tasks, name="tasks"),
]
