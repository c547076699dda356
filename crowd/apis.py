"""Accounts: register, token, session log-in/out, ``/me/``, and managers creating clients."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import login, logout
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from crowd import services
from crowd.models import Role, User
from crowd.permissions import IsManager, request_user
from crowd.profile import me_contributions


class CredentialsIn(serializers.Serializer):
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class RegisterIn(CredentialsIn):
    email = serializers.CharField(max_length=254, allow_blank=True, required=False, default="")


class UserOut(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.CharField()


class MoneyOut(serializers.Serializer):
    amount = serializers.CharField()
    currency = serializers.CharField()


class MeOut(UserOut):
    email = serializers.CharField()
    balance = MoneyOut()
    score = serializers.FloatField(allow_null=True)


def _user_json(user: User) -> dict[str, Any]:
    return {"id": user.pk, "username": user.username, "role": user.role}


def me_json(user: User) -> dict[str, Any]:
    return {**_user_json(user), "email": user.email, **me_contributions.collect(user)}


class _AnonymousApi(APIView):
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]


class RegisterApi(_AnonymousApi):
    """Sign up as a worker. Managers and clients are made by operators or managers."""

    throttle_scope = "register"

    @extend_schema(request=RegisterIn, responses={201: UserOut})
    def post(self, request: Request) -> Response:
        data = RegisterIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_create(**data.validated_data, role=Role.WORKER)
        return Response(_user_json(user), status=status.HTTP_201_CREATED)


class TokenApi(_AnonymousApi):
    throttle_scope = "auth"

    @extend_schema(
        request=CredentialsIn,
        responses={200: inline_serializer("TokenOut", {"token": serializers.CharField()})},
    )
    def post(self, request: Request) -> Response:
        data = CredentialsIn(data=request.data)
        data.is_valid(raise_exception=True)
        token = services.token_obtain(**data.validated_data)
        return Response({"token": token.key})


@method_decorator(ensure_csrf_cookie, name="dispatch")
class LoginApi(_AnonymousApi):
    """Session log-in for the pages; sets the CSRF cookie their later writes need."""

    throttle_scope = "auth"

    @extend_schema(request=CredentialsIn, responses={200: MeOut})
    def post(self, request: Request) -> Response:
        data = CredentialsIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_authenticate(**data.validated_data)
        login(request._request, user, backend="crowd.backends.CaseInsensitiveModelBackend")
        return Response(me_json(user))


class LogoutApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request) -> Response:
        logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: MeOut})
    def get(self, request: Request) -> Response:
        user = request_user(request)
        return Response(me_json(user))


class TokenRotateApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={200: inline_serializer("TokenRotated", {"token": serializers.CharField()})},
    )
    def post(self, request: Request) -> Response:
        user = request_user(request)
        return Response({"token": services.token_rotate(user=user).key})


class ClientCreateApi(APIView):
    """Managers create client accounts for the people who will download their datasets."""

    permission_classes = [IsManager]

    @extend_schema(request=RegisterIn, responses={201: UserOut})
    def post(self, request: Request) -> Response:
        data = RegisterIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_create(**data.validated_data, role=Role.CLIENT)
        return Response(_user_json(user), status=status.HTTP_201_CREATED)
