"""The project's URLs with the rate-limited sign-in in front, exactly as
cardsavr_portal/urls.py would mount it."""

from django.urls import path

from cardsavr_portal.urls import urlpatterns as project_urlpatterns
from jobs.ratelimit import RateLimitedLoginView

urlpatterns = [
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    *project_urlpatterns,
]
