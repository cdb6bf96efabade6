from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import path

from dualsend_app.api import batch, views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/orders", views.orders_collection, name="orders"),
    # Before the detail route, which would take "batch" for an order id.
    path("api/orders/batch", batch.orders_batch, name="orders-batch"),
    path("api/orders/<str:order_id>", views.order_detail, name="order-detail"),
]
# With DJANGO_DEBUG on (the demo's gunicorn), serve the admin's CSS; in production a proxy
# or the platform serves STATIC_ROOT (`manage.py collectstatic`).
urlpatterns += staticfiles_urlpatterns()
