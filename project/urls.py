from django.contrib import admin
from django.urls import include, path

from dualsend_app.api import api_docs, batch, health, metrics_view, views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/orders", views.orders_collection, name="orders"),
    # Before the detail route, which would take "batch" for an order id.
    path("api/orders/batch", batch.orders_batch, name="orders-batch"),
    path("api/orders/<str:order_id>", views.order_detail, name="order-detail"),
    # The API's OpenAPI 3.1 document and its page: public, no token (dualsend_app/api/api_docs.py).
    path("api/schema", api_docs.schema, name="api-schema"),
    path("api/docs", api_docs.docs, name="api-docs"),
]
# Static files (the admin's CSS) need no route: WhiteNoise's middleware answers them before
# URL resolution, from the apps with DJANGO_DEBUG on, from STATIC_ROOT off (settings.py).
# Prometheus: the scrape target of a one-host deployment, loopback or token only
# (dualsend_app/api/metrics_view.py).
urlpatterns.append(path("metrics", metrics_view.metrics_endpoint, name="metrics"))
# Health probes: no token, no rate limit, plain HTTP allowed (dualsend_app/api/health.py).
urlpatterns += [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]
# The live dashboard for staff, and the JSON it refreshes itself from (dualsend_app/dashboard/).
urlpatterns.append(path("dashboard/", include("dualsend_app.dashboard.urls")))
