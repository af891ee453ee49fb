"""Sign-up and login. Modules:

    views     the sign-up and account pages (login and logout are Django's own views)
    forms     the login forms of the site and the admin, both throttled
    throttle  failed-login counting in Redis, per account and per address
    roles     the Curators group (questions only, no learner data), made sure of after migrate
    urls      /accounts/
    apps      the app config
"""
