from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from jobs import events


@receiver(user_logged_out, dispatch_uid="jobs.revoke_sockets_on_logout")
def revoke_sockets_on_logout(sender, request, user, **kwargs) -> None:
    """Close every open socket of this user: their session is gone."""
    if user is None:
        return
    async_to_sync(get_channel_layer().group_send)(
        events.user_group(user.pk), {"type": events.SESSION_REVOKED_EVENT}
    )
