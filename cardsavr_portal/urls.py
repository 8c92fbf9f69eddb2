from django.contrib import admin
from django.urls import include, path

from jobs.ratelimit import RateLimitedLoginView

urlpatterns = [
    path("admin/", admin.site.urls),
    # Sign-in attempts are limited per username and per address; the rest of
    # Django's auth views are used as they come.
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("jobs.urls")),
]
