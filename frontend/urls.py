from django.urls import path

from frontend import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.login_page, name="login"),
    path("signup/", views.signup_page, name="signup"),
    path("work/", views.work, name="work"),
    path("work/projects/<int:project_id>/", views.workspace, name="workspace"),
    path("manage/", views.manage, name="manage"),
    path("manage/projects/new/", views.project_new, name="project-new"),
    path("manage/projects/<int:project_id>/", views.dashboard, name="dashboard"),
    path("manage/projects/<int:project_id>/gold/", views.gold, name="gold-editor"),
    path("manage/projects/<int:project_id>/review/", views.review, name="review"),
    path("client/", views.client, name="client"),
    path("annotator-demo/", views.annotator_demo, name="annotator-demo"),
]
