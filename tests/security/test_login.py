"""Attacks on signing in: guess bursts, lockouts aimed at a victim, account probing, refresh
races, login floods. Each attack must fail and the real user must still get in.

Clients at different addresses are separate ASGI clients of one app (`Api.from_address`).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, auth, fake_driver_factory, make_settings, running_api

LOGIN = "/api/v1/auth/login"
ATTACKER, VICTIM, OTHER = "198.51.100.66", "203.0.113.10", "192.0.2.44"


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Api]:
    """The default budgets: 5 failures per account and address, 10 per address a minute."""
    settings = make_settings(tmp_path, login_attempts_per_minute=10, login_max_failures=5)
    async with running_api(settings, fake_driver_factory, None) as api:
        yield api


def code(response: Any) -> str:
    return str(response.json()["error"]["code"]) if response.status_code != 200 else "OK"


async def test_a_parallel_guess_burst_gets_no_more_checks_than_the_lockout_allows(guarded: Api) -> None:
    async with guarded.from_address(ATTACKER) as attacker:
        guesses = [
            attacker.post(LOGIN, json={"username": "admin", "password": f"guess-{n}"}) for n in range(30)
        ]
        answers = Counter(code(r) for r in await asyncio.gather(*guesses))
    assert answers == {"INVALID_CREDENTIALS": 5, "TOO_MANY_ATTEMPTS": 25}


async def test_an_anonymous_lockout_attempt_does_not_keep_the_user_out(guarded: Api) -> None:
    async with guarded.from_address(ATTACKER) as attacker, guarded.from_address(VICTIM) as victim:
        for _ in range(3):  # the attacker keeps at it
            for _ in range(6):
                await attacker.post(LOGIN, json={"username": "admin", "password": "wrong"})
            response = await victim.post(LOGIN, json={"username": "admin", "password": "admin123"})
            assert response.status_code == 200, response.text
        # ... and only the attacker's own address is shut out, even with the right password.
        shut_out = await attacker.post(LOGIN, json={"username": "admin", "password": "admin123"})
        assert shut_out.status_code == 429 and code(shut_out) == "TOO_MANY_ATTEMPTS"
        assert int(shut_out.headers["retry-after"]) >= 1


async def test_answers_never_tell_whether_an_account_exists(guarded: Api) -> None:
    sequences = {}
    for name, address in (("admin", ATTACKER), ("no-such-user", OTHER)):
        async with guarded.from_address(address) as client:
            answers = [await client.post(LOGIN, json={"username": name, "password": "x"}) for _ in range(7)]
        # The wait a lockout names counts down with the clock: the two runs may be a second apart.
        sequences[name] = [(r.status_code, code(r), re.sub(r"\d+ s\b", "N s", r.json()["error"]["message"]))
                           for r in answers]  # fmt: skip
    assert sequences["admin"] == sequences["no-such-user"]
    assert [c for _, c, _ in sequences["admin"]] == ["INVALID_CREDENTIALS"] * 5 + ["TOO_MANY_ATTEMPTS"] * 2


async def test_guesses_spread_over_addresses_meet_the_account_ceiling(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, login_max_failures=5, login_max_failures_per_account=10)
    async with running_api(settings, fake_driver_factory, None) as api:
        for n in range(2):
            async with api.from_address(f"198.51.100.{n}") as client:
                for _ in range(5):
                    wrong = await client.post(LOGIN, json={"username": "admin", "password": "wrong"})
                    assert code(wrong) == "INVALID_CREDENTIALS"
        async with api.from_address("198.51.100.9") as third:
            refused = await third.post(LOGIN, json={"username": "admin", "password": "guess"})
        assert code(refused) == "TOO_MANY_ATTEMPTS"
        assert "for this account;" in refused.json()["error"]["message"]


async def test_password_spraying_over_accounts_is_throttled_per_address(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, login_attempts_per_minute=3)
    async with running_api(settings, fake_driver_factory, None) as api:
        async with api.from_address(ATTACKER) as attacker:
            names = ["admin", "alice", "bob", "carol", "dave"]
            answers = [
                code(await attacker.post(LOGIN, json={"username": n, "password": "Summer2026"}))
                for n in names
            ]
        assert answers == ["INVALID_CREDENTIALS"] * 3 + ["TOO_MANY_ATTEMPTS"] * 2
        async with api.from_address(VICTIM) as victim:
            assert (
                await victim.post(LOGIN, json={"username": "admin", "password": "admin123"})
            ).status_code == 200


async def test_successful_logins_spend_no_budget(guarded: Api) -> None:
    async with guarded.from_address(VICTIM) as client:
        for _ in range(15):  # more than every budget: scripts that log in often are fine
            response = await client.post(LOGIN, json={"username": "admin", "password": "admin123"})
            assert response.status_code == 200


async def test_wrong_current_passwords_count_like_failed_logins(guarded: Api) -> None:
    async with guarded.from_address(ATTACKER) as thief, guarded.from_address(VICTIM) as owner:
        token = (await thief.post(LOGIN, json={"username": "admin", "password": "admin123"})).json()["token"]
        change = "/api/v1/auth/password"
        answers = []
        for n in range(6):  # a stolen token guessing the password, to lock the owner out with it
            response = await thief.put(
                change,
                json={"current_password": f"guess-{n}", "new_password": "taken-over-1"},
                headers=auth(token),
            )
            answers.append(code(response))
        assert answers == ["VALIDATION_ERROR"] * 5 + ["TOO_MANY_ATTEMPTS"]
        login = await thief.post(LOGIN, json={"username": "admin", "password": "admin123"})
        assert code(login) == "TOO_MANY_ATTEMPTS"  # the same budget as logins
        assert (
            await owner.post(LOGIN, json={"username": "admin", "password": "admin123"})
        ).status_code == 200


async def test_a_login_flood_beyond_the_cap_is_refused_not_queued(tmp_path: Path) -> None:
    # Budgets as large as the flood: every attempt is presumed a failure until checked, so with
    # the default 5 most of these 12 would be refused as guesses before they reach the cap.
    settings = make_settings(tmp_path, login_max_concurrent=2, password_hash_workers=1,
                             login_max_failures=12, login_attempts_per_minute=12)  # fmt: skip
    async with running_api(settings, fake_driver_factory, None) as api:
        flood = [
            api.client.post(LOGIN, json={"username": "admin", "password": "admin123"}) for _ in range(12)
        ]
        answers = await asyncio.gather(*flood)
        counts = Counter(code(r) for r in answers)
        assert set(counts) == {"OK", "LOGIN_BUSY"} and counts["OK"] >= 2
        busy = next(r for r in answers if code(r) == "LOGIN_BUSY")
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert (await api.client.get("/api/v1/health")).status_code == 200
        # Refused logins were not counted as failures: the budget is whole.
        for _ in range(5):
            assert (
                await api.client.post(LOGIN, json={"username": "admin", "password": "admin123"})
            ).status_code == 200


# -- refresh tokens ---------------------------------------------------------------------------------
@pytest.mark.parametrize("parallel", [8])
async def test_parallel_refreshes_with_one_token_give_exactly_one_session(
    api_any_db: Api, parallel: int
) -> None:
    login = await api_any_db.client.post(LOGIN, json={"username": "admin", "password": "admin123"})
    refresh_token = login.json()["data"]["refresh_token"]
    answers = await asyncio.gather(*[
        api_any_db.client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})
        for _ in range(parallel)
    ])  # fmt: skip
    assert sorted(r.status_code for r in answers) == [200] + [401] * (parallel - 1)
    assert {code(r) for r in answers if r.status_code == 401} == {"INVALID_TOKEN"}
    winner = next(r for r in answers if r.status_code == 200).json()
    assert (await api_any_db.client.get("/api/v1/auth/me", headers=auth(winner["token"]))).status_code == 200
    again = await api_any_db.client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})
    assert again.status_code == 401


async def test_expired_revoked_sessions_are_purged(api_any_db: Api) -> None:
    from datetime import timedelta

    from voidvm_server.persistence.repositories import TokenRepository
    from voidvm_server.services.clock import now

    db = api_any_db.container.db
    async with db.session() as s:
        repo = TokenRepository(s)
        assert await repo.revoke_session("old-session", now() - timedelta(minutes=1))
        assert await repo.revoke_session("live-session", now() + timedelta(days=1))
        assert not await repo.revoke_session("live-session", now() + timedelta(days=1))
    assert await api_any_db.container.auth.purge_revoked() == 1
    async with db.session() as s:
        repo = TokenRepository(s)
        assert await repo.revoke_session("old-session", now())  # gone, so it can be recorded again
        assert not await repo.revoke_session("live-session", now())  # kept


async def test_rotating_loopback_addresses_do_not_escape_the_budgets(guarded: Api) -> None:
    answers = []
    for n in range(7):  # a local user can bind any of 127.0.0.0/8
        async with guarded.from_address(f"127.0.0.{n + 2}") as client:
            answers.append(code(await client.post(LOGIN, json={"username": "admin", "password": "wrong"})))
    assert answers == ["INVALID_CREDENTIALS"] * 5 + ["TOO_MANY_ATTEMPTS"] * 2


async def test_an_admin_lifts_a_lockout(guarded: Api) -> None:
    admin = await guarded.login()
    bob = await guarded.create_user(admin, "bob")
    async with guarded.from_address(ATTACKER) as client:
        for _ in range(5):
            await client.post(LOGIN, json={"username": "bob", "password": "wrong"})
        locked = await client.post(LOGIN, json={"username": "bob", "password": "password-123"})
        assert code(locked) == "TOO_MANY_ATTEMPTS"
        lifted = await guarded.client.put(
            f"/api/v1/users/{bob['id']}", json={"status": "active"}, headers=auth(admin)
        )
        assert lifted.status_code == 200
        again = await client.post(LOGIN, json={"username": "bob", "password": "password-123"})
        assert again.status_code == 200, again.text
