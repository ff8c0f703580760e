"""A stand-in for endpoints other apps add under /api/v1/: no idempotency code of its own."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

CALLS: list[dict] = []


class EchoView(APIView):
    required_scopes = {"POST": "contacts:write"}

    def post(self, request):
        CALLS.append(dict(request.data))
        return Response({"call": len(CALLS)}, status=201)


class BrokenView(APIView):
    required_scopes = {"POST": "contacts:write"}

    def post(self, request):
        from contacts.models import Contact

        Contact.objects.create(name="half-written", source="api")
        raise RuntimeError("boom")


urlpatterns = [
    path("api/v1/test-echo", EchoView.as_view()),
    path("api/v1/test-broken", BrokenView.as_view()),
    path("", include("crm_hub.urls")),
]
