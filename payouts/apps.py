from django.apps import AppConfig


class PayoutsConfig(AppConfig):
    name = "payouts"
    verbose_name = "Payouts: ledger, rewards and payouts"

    def ready(self) -> None:
        from crowd import contracts
        from crowd.profile import me_contributions
        from payouts import profile, services
        from tasks import hooks

        contracts.worker_earnings.register("ledger", services.project_earnings)
        contracts.gold_failed.register("auto_reject", lambda a: services.gold_failed(assignment=a))
        hooks.budget_check.register("ledger", services.budget_blocks)
        hooks.periodic.register("approvals", services.approvals_sweep)
        hooks.worker_snapshot.register("balance", profile.balance_frames)
        hooks.progress_contributions.register("payouts", profile.project_spend)
        me_contributions.register("payouts", profile.my_money)
