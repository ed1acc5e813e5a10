from django.contrib import admin
from django.urls import path

admin.site.site_header = "ImageFlow administration"
admin.site.site_title = "ImageFlow"
admin.site.index_title = "Components, pipelines, workflows and runs"

urlpatterns = [
    path("admin/", admin.site.urls),
]
