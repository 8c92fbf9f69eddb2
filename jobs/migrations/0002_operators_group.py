# Creates the "operators" group: bank staff who look at every mirrored record
# and may cancel or refresh jobs at CardSavr, but never edit what CardSavr owns.

from django.db import migrations

OPERATORS_GROUP = "operators"
ACT_CODENAME = "act_on_job"
ACT_NAME = "Can cancel and refresh jobs at CardSavr"
# model name -> verbose name, as Django's own default permissions spell it.
VIEWED_MODELS = {
    "cardholder": "cardholder",
    "card": "card",
    "merchantsite": "merchant site",
    "job": "job",
    "credentialrequest": "credential request",
    "jobevent": "job event",
    "webhooknotification": "webhook notification",
}


def _permission(apps, model, codename, name):
    # Default permissions are only created by post_migrate, after every
    # migration has run, so this migration makes the rows it needs itself;
    # post_migrate later finds them and leaves them alone.
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    content_type, _ = ContentType.objects.get_or_create(app_label="jobs", model=model)
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=codename, defaults={"name": name}
    )
    return permission


def create_operators_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    group, _ = Group.objects.get_or_create(name=OPERATORS_GROUP)
    permissions = [
        _permission(apps, model, f"view_{model}", f"Can view {verbose}")
        for model, verbose in VIEWED_MODELS.items()
    ]
    permissions.append(_permission(apps, "job", ACT_CODENAME, ACT_NAME))
    group.permissions.add(*permissions)


def remove_operators_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    Group.objects.filter(name=OPERATORS_GROUP).delete()
    Permission.objects.filter(
        content_type__app_label="jobs", codename=ACT_CODENAME
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_operators_group, remove_operators_group),
    ]
