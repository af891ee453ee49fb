from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.shortcuts import redirect, render

from accounts import throttle
from accounts.forms import client_address


def signup(request):
    if request.user.is_authenticated:
        return redirect("home")
    form = UserCreationForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        refused = throttle.take_signup(client_address(request))  # counted only for an account that would be made
        if refused is None:
            user = form.save()
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome, {user.username}! Your account is ready.")
            return redirect("home")
        form.add_error(None, refused)
        status = 429
    return render(request, "registration/signup.html", {"form": form}, status=status)


@login_required
def account(request):
    # Other apps add sections to this page (API tokens live in the inference app).
    return render(request, "accounts/account.html")
