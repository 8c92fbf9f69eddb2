from django.urls import include, path

from jobs import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("card/", views.card, name="card"),
    path("start/", views.start, name="start"),
    path("jobs/<int:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/reply/", views.job_reply, name="job_reply"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:job_id>/retry/", views.job_retry, name="job_retry"),
    # jobs.serializers builds every logo URL in the JSON payloads from this name.
    path(
        "merchant-sites/<int:site_id>/logo",
        views.merchant_logo,
        name="merchant_site_logo",
    ),
    path("api/", include("jobs.api_urls")),
    path("", include("jobs.webhook_urls")),
]
