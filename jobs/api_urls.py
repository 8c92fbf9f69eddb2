"""The JSON API's routes; jobs/urls.py mounts them under api/."""

from django.urls import path

from jobs import api

urlpatterns = [
    path("merchant-sites/", api.merchant_sites, name="api-merchant-sites"),
    path("jobs/", api.jobs, name="api-jobs"),
    path("jobs/<int:job_id>/", api.job_detail, name="api-job"),
    path("jobs/<int:job_id>/reply/", api.job_reply, name="api-job-reply"),
    path("jobs/<int:job_id>/cancel/", api.job_cancel, name="api-job-cancel"),
]
