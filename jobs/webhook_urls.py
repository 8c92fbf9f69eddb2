from django.urls import path

from jobs.webhooks import cardsavr_webhook

urlpatterns = [
    path("webhooks/cardsavr/", cardsavr_webhook, name="cardsavr-webhook"),
]
