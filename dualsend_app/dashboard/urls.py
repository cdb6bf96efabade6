"""/dashboard/: the page, and the JSON it refreshes itself from."""

from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.dashboard_page, name="page"),
    path("data.json", views.dashboard_data, name="data"),
]
