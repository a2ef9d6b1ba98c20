"""The test Django project's URLconf: the hooks under ``rainbow/``."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("rainbow/", include("rainbow.django.urls"))]
