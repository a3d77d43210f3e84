"""The tutorial project's pages (``ROOT_URLCONF``); its websocket URLs are in ``chat.websocket_urls``."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("chat/", include("chat.urls")),
    path("admin/", admin.site.urls),
]
