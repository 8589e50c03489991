"""The site's URLs: the chat app at /chat/ (where / leads), Django's admin at /admin/."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="index")),
    path("chat/", include("chat.urls")),
    path("admin/", admin.site.urls),
]
