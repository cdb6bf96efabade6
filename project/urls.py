from django.contrib import admin
from django.urls import path

from dualsend_app.api import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/orders", views.orders_collection, name="orders"),
    path("api/orders/<str:order_id>", views.order_detail, name="order-detail"),
]
