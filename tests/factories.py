from __future__ import annotations

import factory
from rest_framework.authtoken.models import Token

from crowd.models import Role, User

PASSWORD = "a-long-test-password-42"


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    role = Role.WORKER
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj: User, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            obj.save()


class WorkerFactory(UserFactory):
    username = factory.Sequence(lambda n: f"worker{n}")
    role = Role.WORKER


class ManagerFactory(UserFactory):
    username = factory.Sequence(lambda n: f"manager{n}")
    role = Role.MANAGER


class ClientFactory(UserFactory):
    username = factory.Sequence(lambda n: f"client{n}")
    role = Role.CLIENT


def token_for(user: User) -> str:
    return Token.objects.get_or_create(user=user)[0].key
