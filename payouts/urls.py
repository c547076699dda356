from django.urls import path

from payouts import apis

urlpatterns = [
    path(
        "assignments/<int:assignment_id>/approve/",
        apis.AssignmentApproveApi.as_view(),
        name="assignment-approve",
    ),
    path(
        "assignments/<int:assignment_id>/reject/",
        apis.AssignmentRejectApi.as_view(),
        name="assignment-reject",
    ),
    path(
        "projects/<int:project_id>/reviews/",
        apis.ProjectReviewsApi.as_view(),
        name="project-reviews",
    ),
    path(
        "projects/<int:project_id>/bonuses/",
        apis.ProjectBonusesApi.as_view(),
        name="project-bonuses",
    ),
    path("me/ledger/", apis.MyLedgerApi.as_view(), name="my-ledger"),
    path("me/payouts/", apis.MyPayoutsApi.as_view(), name="my-payouts"),
    path("me/payout-account/", apis.MyPayoutAccountApi.as_view(), name="my-payout-account"),
    path("payouts/", apis.PayoutsApi.as_view(), name="payouts"),
    path("payouts/batches/", apis.PayoutBatchesApi.as_view(), name="payout-batches"),
    path(
        "payouts/batches/<int:batch_id>/csv/",
        apis.PayoutBatchCsvApi.as_view(),
        name="payout-batch-csv",
    ),
    path(
        "payouts/batches/<int:batch_id>/paid/",
        apis.PayoutBatchPaidApi.as_view(),
        name="payout-batch-paid",
    ),
    path("payouts/<int:payout_id>/failed/", apis.PayoutFailedApi.as_view(), name="payout-failed"),
    path("payouts/webhooks/stripe/", apis.StripeWebhookApi.as_view(), name="payout-webhook-stripe"),
]
