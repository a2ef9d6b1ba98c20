"""A Django app whose ``rainbow`` module holds rainbow-django style handlers."""
