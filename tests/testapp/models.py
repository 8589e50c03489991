from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=100)


class Label(models.Model):
    """Observed through Article's many-to-many (tests/test_observers.py)."""

    name = models.CharField(max_length=50)


class Article(models.Model):
    """An observed model: its section and labels decide its groups."""

    section = models.CharField(max_length=50)
    title = models.CharField(max_length=100)
    labels = models.ManyToManyField(Label, related_name="articles", blank=True)
