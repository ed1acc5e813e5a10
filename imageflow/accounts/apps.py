from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "imageflow.accounts"
    label = "accounts"
    verbose_name = "Accounts"
