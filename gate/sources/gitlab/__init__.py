"""GitLab (CentOS Stream's ``redhat/centos-stream/rpms/<pkg>``) as a review system.

``config`` (the connection and its rules), ``verify`` (is a delivery ours, which
one is it), ``hooks`` (payloads read into hints), ``client`` (the REST calls),
``source`` (the ``ChangeSource``), ``reporter`` (statuses and notes).
"""
