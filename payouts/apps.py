from django.apps import AppConfig


class PayoutsConfig(AppConfig):
    name = "payouts"
    verbose_name = "Payouts: ledger, rewards and payouts"

    def ready(self) -> None:
        from crowd.profile import me_contributions
        from payouts import profile, services
        from tasks.hooks import (
            progress_contributions,
            register_budget_check,
            register_earnings,
            register_gold_failed,
            register_periodic,
            register_worker_snapshot,
        )

        register_earnings(services.project_earnings)
        register_budget_check(services.budget_blocks)
        register_periodic("approvals", services.approvals_sweep)
        register_gold_failed("auto_reject", lambda a: services.gold_failed(assignment=a))
        register_worker_snapshot("balance", profile.balance_frames)
        me_contributions.register("payouts", profile.my_money)
        progress_contributions.register("payouts", profile.project_spend)
