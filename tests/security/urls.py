"""The login view with its rate limit, mounted for the tests (the admin's
login template it borrows needs the admin's URLs)."""

from django.contrib import admin
from django.urls import path

from jobs.ratelimit import RateLimitedLoginView

urlpatterns = [
    path(
        "login/",
        RateLimitedLoginView.as_view(template_name="admin/login.html"),
        name="login",
    ),
    path("admin/", admin.site.urls),
]
