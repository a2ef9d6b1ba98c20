"""``path("rainbow/", include("rainbow.django.urls"))`` serves the gateway's hooks:
``connect/``, ``close/`` and ``message/<int:msg_type>/``."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("connect/", views.connect, name="rainbow-connect"),
    path("close/", views.close, name="rainbow-close"),
    path("message/<int:msg_type>/", views.on_message, name="rainbow-message"),
]
