"""GET /api/schema (the OpenAPI 3.1 document, JSON) and GET /api/docs (its page).

Both are public, with no token and no rate limit: the contract is what a team reads before
it has a token, and it holds nothing of any client. The page is Swagger UI from the pinned
`drf-spectacular-sidecar` package, served as static files like the admin's (no CDN); its
"Try it out" asks for a bearer token like any client.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse

from .openapi import openapi_document
from .views import api_view


@api_view("GET")
def schema(request: HttpRequest) -> JsonResponse:
    """The OpenAPI document of the API."""
    return JsonResponse(openapi_document())


@api_view("GET")
def docs(request: HttpRequest) -> HttpResponse:
    """The document as a page to read and try."""
    return render(request, "api_docs/index.html", {"schema_url": reverse("api-schema")})
