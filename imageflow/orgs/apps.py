from django.apps import AppConfig


class OrgsConfig(AppConfig):
    name = "imageflow.orgs"
    label = "orgs"
    verbose_name = "Organizations"
