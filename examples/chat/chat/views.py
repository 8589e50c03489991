"""The two pages: pick a room, then chat in it."""

import re

from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from .models import ROOM_NAME_PATTERN, Message


def index(request: HttpRequest) -> HttpResponse:
    """List the rooms that have messages; the form sends ``?room_name=`` back here."""
    room_name = request.GET.get("room_name", "").strip()
    if re.fullmatch(ROOM_NAME_PATTERN, room_name):
        return redirect("room", room_name=room_name)
    rooms = (
        Message.objects.values("room")
        .annotate(messages=Count("id"), last_sent=Max("sent"))
        .order_by("-last_sent")
    )
    if "room_name" in request.GET:
        error, status = "Room names are 1 to 50 letters, digits, '-' or '_'.", 400
    else:
        error, status = "", 200
    context = {"rooms": rooms, "error": error}
    return render(request, "chat/index.html", context, status=status)


def room(request: HttpRequest, room_name: str) -> HttpResponse:
    return render(request, "chat/room.html", {"room_name": room_name})
