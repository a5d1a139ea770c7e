"""The emulator process's heart: the `Emulator` (state, data plane, resource modules) and the ASGI
app that authenticates, throttles, injects faults, routes case-insensitively and checks api-versions."""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from switchyard_emulator.apiversions import API_VERSION_FORMAT
from switchyard_emulator.azurite import BlobStorage
from switchyard_emulator.common import Ctx, Route, error_response, json_response, read_body
from switchyard_emulator.compute_throttling import ComputeThrottle
from switchyard_emulator.dataplane.api import DataPlane
from switchyard_emulator.errors import ArmError
from switchyard_emulator.faults import FaultInjector, FaultTarget
from switchyard_emulator.identity import Identity
from switchyard_emulator.ids import key_of
from switchyard_emulator.log_query_throttling import LogQueryThrottle, QueryThrottled
from switchyard_emulator.lro import Operations
from switchyard_emulator.profiles import TimingProfile, timing_profile
from switchyard_emulator.resources.quotas import DEFAULT_VCPU_QUOTA
from switchyard_emulator.store import Store
from switchyard_emulator.throttling import ArmThrottle

log = logging.getLogger("switchyard_emulator")

_ALL_METHODS = ["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD"]


class Emulator:
    """The control plane: ARM resources in SQLite, handed to the data plane to make them real."""

    def __init__(
        self,
        state_dir: Path,
        identity: Identity,
        dataplane: DataPlane,
        *,
        faults: FaultInjector | None = None,
        page_size: int = 100,
        lro_retry_after: int = 1,
        vcpu_quota: int = DEFAULT_VCPU_QUOTA,
        timing: TimingProfile | None = None,
        storage: BlobStorage | None = None,
    ) -> None:
        from switchyard_emulator.resources.gallery import Galleries
        from switchyard_emulator.resources.gateways import Gateways
        from switchyard_emulator.resources.groups import ResourceGroups
        from switchyard_emulator.resources.insights import Insights
        from switchyard_emulator.resources.managed_images import ManagedImages
        from switchyard_emulator.resources.network import Networks
        from switchyard_emulator.resources.nsgs import SecurityGroups
        from switchyard_emulator.resources.quotas import Quotas
        from switchyard_emulator.resources.scalesets import ScaleSets
        from switchyard_emulator.resources.storage import StorageAccounts
        from switchyard_emulator.resources.workspaces import Workspaces

        self.state_dir = state_dir
        self.identity = identity
        self.dataplane = dataplane
        self.faults = faults or FaultInjector()
        self.page_size = page_size
        self.lro_retry_after = lro_retry_after
        self.timing = timing or timing_profile("fast")
        self.throttle = ArmThrottle(identity.subscription_id, enforced=self.timing.arm_throttling)
        self.compute_throttle = ComputeThrottle(enforced=self.timing.arm_throttling)
        self.log_query_throttle = LogQueryThrottle(enforced=self.timing.arm_throttling)
        self.store = Store(state_dir / "arm.sqlite")
        self.ops = Operations(self)
        self.groups = ResourceGroups(self)
        self.networks = Networks(self)
        self.nsgs = SecurityGroups(self)
        # the blob storage (Azurite) behind storage accounts; None: no account can be made
        self.storage_accounts = StorageAccounts(self, storage)
        self.managed_images = ManagedImages(self)
        self.galleries = Galleries(self)
        self.gateways = Gateways(self)
        self.scale_sets = ScaleSets(self)
        self.quotas = Quotas(self, vcpu_quota)
        self.insights = Insights(self)
        self.workspaces = Workspaces(self)
        self.routes: list[Route] = [
            *self.ops.routes(),
            *self.insights.routes(),  # first: its routes catch any resource URI prefix
            *self.groups.routes(),
            *self.networks.routes(),
            *self.nsgs.routes(),
            *self.storage_accounts.routes(),
            *self.managed_images.routes(),
            *self.galleries.routes(),
            *self.gateways.routes(),
            *self.scale_sets.routes(),
            *self.quotas.routes(),
            *self.workspaces.routes(),
        ]
        self.started = False

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.workspaces.ensure()  # before anything can reference the emulator's workspace
        await self.dataplane.start(_ArmFacade(self))
        # replay the desired state: every scale set's instances, then every gateway
        await self.scale_sets.replay()
        await self.gateways.replay()
        self.ops.resume_all()
        self.started = True

    async def stop(self) -> None:
        await self.ops.shutdown()
        try:
            await self.dataplane.stop()
        finally:
            self.store.close()

    # -- request handling --------------------------------------------------------------------------

    def authenticated(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return hmac.compare_digest(token.strip().encode(), self.identity.token.encode())

    async def handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            response = await self._handle(request)
        except ArmError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            response = error_response(
                ArmError(500, "InternalServerError", "The emulator failed to handle the request; see its log.")
            )
        response.headers["x-ms-request-id"] = request_id
        response.headers["x-ms-correlation-request-id"] = request.headers.get("x-ms-correlation-request-id", request_id)
        if request.method != "GET" or response.status_code >= 400:
            log.info("%s %s -> %s", request.method, request.url.path, response.status_code)
        return response

    async def _handle(self, request: Request) -> Response:
        if not self.authenticated(request):
            missing = "authorization" not in request.headers
            raise ArmError(
                401,
                "AuthenticationFailed" if missing else "InvalidAuthenticationToken",
                "Authentication failed. The 'Authorization' header is missing."
                if missing
                else "The access token is invalid.",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common",'
                    ' error="invalid_token", error_description="The access token is missing or invalid."'
                },
            )
        path = request.url.path
        segments = [s for s in path.split("/") if s]
        lowered = [s.lower() for s in segments]
        if lowered[:2] == ["switchyard", "faults"] and len(segments) == 2:
            return await self._control(request, "faults", self.faults.configure_from_json, self.faults.status)
        if lowered[:2] == ["switchyard", "quotas"] and len(segments) == 2:
            return await self._control(request, "quotas", self.quotas.configure, self.quotas.status)
        if lowered[:2] == ["switchyard", "skus"] and len(segments) == 2:
            return await self._control(request, "skus", self.quotas.configure_skus, self.quotas.sku_status)
        if lowered[:2] == ["switchyard", "throttling"] and len(segments) == 2:
            return await self._control(request, "throttling", self._configure_throttling, self._throttling_status)

        if lowered[:2] == ["v1", "workspaces"]:  # the Log Analytics query API: not Resource Manager's
            await self._draw_fault("log-queries")
            try:
                async with self.log_query_throttle.admitted_query():
                    return await self.insights.log_analytics(request, segments)
            except QueryThrottled as throttled:
                return json_response(429, throttled.to_body())

        # Resource Manager throttles before a resource provider sees the request (throttling.py), then
        # Microsoft.Compute its scale sets' (compute_throttling.py).
        subscription_scoped = lowered[:1] == ["subscriptions"]
        remaining = self.throttle.admit(request.method, lowered) if subscription_scoped else {}
        try:
            if subscription_scoped:
                remaining |= self.compute_throttle.admit(request.method, lowered, self._exists)
            await self._draw_fault("arm")
            response = await self._route(request, path, segments, lowered)
        except ArmError as error:  # a refusal is counted all the same, and says what is left
            error.headers = {**remaining, **error.headers}
            raise
        response.headers.update(remaining)
        return response

    def _exists(self, key: str) -> bool:
        return self.store.get(key) is not None

    def _configure_throttling(self, data: object) -> object:
        """Resource Manager's, Microsoft.Compute's and Log Analytics' throttling go on and off together:
        Azure always has them all, and a profile that has one without the others would be looser."""
        config = self.throttle.configure_from_json(data)
        self.compute_throttle.configure(config.enforced)
        self.log_query_throttle.configure(config.enforced)
        return config

    def _throttling_status(self) -> dict[str, object]:
        return {
            **self.throttle.status(),
            "compute": self.compute_throttle.status(),
            "log_queries": self.log_query_throttle.status(),
        }

    async def _draw_fault(self, target: FaultTarget) -> None:
        kind = self.faults.draw(target)
        if kind is not None:
            await self.faults.apply(kind)

    async def _route(self, request: Request, path: str, segments: list[str], lowered: list[str]) -> Response:
        for candidate in self.routes:
            params = candidate.match(segments)
            if params is None:
                continue
            if request.method not in candidate.methods:
                continue
            raw_query = parse_qsl(request.url.query, keep_blank_values=True)
            query = {k.lower(): v for k, v in raw_query}
            api_version = query.get("api-version", "")
            if candidate.api_versions is not None:
                self._check_api_version(api_version, candidate)
            if "sub" in params and params["sub"].lower() != self.identity.subscription_id.lower():
                raise ArmError(404, "SubscriptionNotFound", f"The subscription '{params['sub']}' could not be found.")
            ctx = Ctx(
                em=self,
                request=request,
                method=request.method,
                path=path,
                params=params,
                query=query,
                raw_query=raw_query,
                api_version=api_version,
                body_bytes=await read_body(request),
            )
            return await candidate.handler(ctx)
        if any(c.match(segments) is not None for c in self.routes):
            raise ArmError(
                405,
                "MethodNotAllowed",
                f"The method '{request.method}' is not allowed on '{request.url.path}'.",
            )
        raise ArmError(
            404,
            "InvalidResourceType" if "providers" in lowered else "NotFound",
            f"The resource path '{request.url.path}' is not served by the switchyard emulator.",
        )

    @staticmethod
    def _check_api_version(api_version: str, candidate: Route) -> None:
        assert candidate.api_versions is not None
        supported = ", ".join(sorted(candidate.api_versions, reverse=True))
        if not api_version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if not API_VERSION_FORMAT.match(api_version):
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{api_version}' is invalid. The supported versions are '{supported}'.",
            )
        if api_version.lower() not in candidate.api_versions:
            raise ArmError(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for API version '{api_version}' and type "
                f"'{candidate.resource_type}'. The supported api-versions are '{supported}'.",
            )

    async def _control(
        self, request: Request, what: str, configure: Callable[[Any], object], status: Callable[[], Any]
    ) -> Response:
        """/switchyard/<what>: GET answers the settings, PUT changes them (JSON; 400 if it is not)."""
        if request.method == "PUT":
            try:
                data: Any = json.loads(await read_body(request))
            except ValueError:
                raise ArmError(400, "InvalidRequestContent", f"The {what} configuration must be JSON.") from None
            configure(data)
        elif request.method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"Use GET or PUT on /switchyard/{what}.")
        return json_response(200, status())


class _ArmFacade:
    """What the data plane may ask of the control plane (see dataplane/api.py ArmFacade)."""

    def __init__(self, em: Emulator) -> None:
        self._em = em

    def list_resources(self, resource_type: str) -> list[dict[str, Any]]:
        return [r.body for r in self._em.store.of_type(resource_type)]

    def resource(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        stored = self._em.store.get(key_of(resource_id))
        return stored.body if stored is not None and stored.type_key == resource_type.lower() else None

    async def set_scale_set_capacity(self, scale_set_id: str, capacity: int, reason: str) -> None:
        await self._em.scale_sets.set_capacity(scale_set_id, capacity, reason)


def create_app(em: Emulator) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await em.start()
        try:
            yield
        finally:
            await em.stop()

    async def endpoint(request: Request) -> Response:
        return await em.handle(request)

    app = Starlette(
        routes=[StarletteRoute("/{path:path}", endpoint, methods=_ALL_METHODS)],
        lifespan=lifespan,
    )
    return app
